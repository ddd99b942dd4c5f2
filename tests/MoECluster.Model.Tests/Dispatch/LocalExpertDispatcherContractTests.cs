using MoECluster.Model.Dispatch;
using MoECluster.Model.Layers;
using MoECluster.Model.Presets;
using MoECluster.Testing;

namespace MoECluster.Model.Tests.Dispatch;

/// <summary>A tiny LatentMoE checkpoint (16 experts) written once for the contract's cases.</summary>
public sealed class TinyLatentModel : IDisposable
{
    private readonly TempDirectory _dir = new();

    public TinyLatentModel()
    {
        SyntheticCheckpoint.Write(_dir.Path, ModelPresets.Get("tiny").Build(experts: 16), (ulong)Random.Shared.Next());
        Model = MoeModel.Open(_dir.Path);
    }

    public MoeModel Model { get; }

    public void Dispose()
    {
        Model.Dispose();
        _dir.Dispose();
    }
}

/// <summary>The dispatcher contract on the in-process dispatcher (the layer's experts in this process).</summary>
public sealed class LocalExpertDispatcherContractTests(TinyLatentModel tiny) : ExpertDispatcherContract, IClassFixture<TinyLatentModel>
{
    protected override MoeModel Model => tiny.Model;

    protected override IExpertDispatcher Dispatcher() => new LocalExpertDispatcher(layer => tiny.Model.Mixer(layer).Experts);
}
