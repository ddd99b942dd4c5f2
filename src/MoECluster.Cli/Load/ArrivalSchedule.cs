namespace MoECluster.Cli.Load;

/// <summary>
/// The open loop's intended start times, seconds from the start of the run (warm-up included). Inter-arrival gaps
/// are gamma distributed with shape B (<c>--burstiness</c>) and mean 1/rate: B = 1 is a Poisson process, B &lt; 1
/// burstier (coefficient of variation 1/√B &gt; 1), B &gt; 1 more regular. Under <c>--ramp-up-strategy</c> the rate
/// changes with time: the gaps are drawn with mean 1 in units of expected arrivals and mapped through the cumulative
/// rate Λ(t) (the arrival time t solves Λ(t) = the running sum), so at every moment the arrivals follow the rate of that
/// moment. Deterministic from the seed.
/// </summary>
internal sealed class ArrivalSchedule
{
    private readonly Random _rng;
    private readonly double _shape;
    private readonly double _warmup;
    private readonly double _duration;
    private readonly double _startRate;
    private readonly double _endRate;
    private readonly string _strategy;
    private double _expected;

    /// <param name="rate">The constant rate (requests per second) when <paramref name="ramp"/> is null.</param>
    public ArrivalSchedule(double rate, double burstiness, RampUp? ramp, double warmupSeconds, double durationSeconds, ulong seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(burstiness);
        _rng = new Random(unchecked((int)seed) ^ 0x5bd1e995);
        _shape = burstiness;
        _warmup = warmupSeconds;
        _duration = durationSeconds;
        (_strategy, _startRate, _endRate) = ramp is null ? (RampUp.Linear, rate, rate) : (ramp.Strategy, ramp.StartRps, ramp.EndRps);
        if (_endRate <= 0 || _startRate < 0 || (_strategy == RampUp.Exponential && _startRate <= 0))
        {
            throw new ArgumentOutOfRangeException(nameof(rate), "the rates must be positive (a linear ramp may start at 0)");
        }
    }

    /// <summary>The rate (requests per second) the schedule follows at <paramref name="seconds"/> from the start of the run.</summary>
    public double RateAt(double seconds) => seconds <= _warmup ? _startRate
        : new RampUp(_strategy, _startRate, _endRate).RateAt(_duration <= 0 ? 1 : (seconds - _warmup) / _duration);

    /// <summary>The next request's intended start, seconds from the start of the run; rising.</summary>
    public double Next()
    {
        // Shape 1 draws the exponential directly, as the open loop did before --burstiness: the same seed, the same arrivals.
        _expected += _shape == 1 ? -Math.Log(1.0 - _rng.NextDouble()) : Gamma(_rng, _shape) / _shape;
        return InverseCumulative(_expected);
    }

    /// <summary>
    /// A gamma variate of shape <paramref name="shape"/> and scale 1 (mean = shape): Marsaglia and Tsang's method,
    /// with shape &lt; 1 drawn as Gamma(shape + 1)·U^(1/shape).
    /// </summary>
    public static double Gamma(Random rng, double shape)
    {
        ArgumentNullException.ThrowIfNull(rng);
        if (shape < 1)
        {
            double u = 1.0 - rng.NextDouble();
            return Gamma(rng, shape + 1) * Math.Pow(u, 1.0 / shape);
        }

        double d = shape - (1.0 / 3.0);
        double c = 1.0 / Math.Sqrt(9.0 * d);
        while (true)
        {
            double x, v;
            do
            {
                x = Gaussian(rng);
                v = 1.0 + (c * x);
            }
            while (v <= 0);

            v = v * v * v;
            double u = 1.0 - rng.NextDouble();
            if (u < 1.0 - (0.0331 * x * x * x * x) || Math.Log(u) < (0.5 * x * x) + (d * (1.0 - v + Math.Log(v))))
            {
                return d * v;
            }
        }
    }

    private static double Gaussian(Random rng)
    {
        double u1 = 1.0 - rng.NextDouble();
        double u2 = rng.NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }

    /// <summary>The time t at which the expected number of arrivals Λ(t) reaches <paramref name="expected"/>.</summary>
    private double InverseCumulative(double expected)
    {
        double a = _startRate, b = _endRate, d = _duration;
        double warm = a * _warmup;
        if (expected <= warm)
        {
            return expected / a;
        }

        double y = expected - warm;
        double ramp;
        bool constant = Math.Abs(b - a) <= 1e-12 * b;
        bool exponential = !constant && _strategy == RampUp.Exponential;
        double lnk = exponential ? Math.Log(b / a) : 0;
        ramp = constant ? a * d : exponential ? a * d / lnk * ((b / a) - 1) : (a + b) / 2 * d;
        if (y > ramp || d <= 0)
        {
            return _warmup + d + ((y - ramp) / b);
        }

        double x = constant ? y / a
            : exponential ? d * Math.Log(1 + (y * lnk / (a * d))) / lnk

            // a·x + (b − a)·x²/(2d) = y, the positive root, written so that a = 0 needs no special case.
            : 2 * y / (a + Math.Sqrt((a * a) + (2 * (b - a) * y / d)));
        return _warmup + Math.Min(x, d);
    }
}
