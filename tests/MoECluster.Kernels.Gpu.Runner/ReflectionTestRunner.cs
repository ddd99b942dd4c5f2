using System.Reflection;
using Xunit;
using Xunit.Sdk;

namespace MoECluster.Kernels.Gpu.Runner;

/// <summary>
/// A small in-process runner for the xUnit v2 tests of one assembly, for machines with no .NET SDK (no vstest): every
/// public [Fact] and [Theory] (data from its DataAttributes: InlineData, MemberData), one after the other, each on a
/// fresh instance of its class (disposed after); constructor parameters are fixtures, one shared instance per type,
/// disposed at the end. A Skip is honoured. What it does not know (other xUnit extensibility) it reports as failed.
/// </summary>
internal static class ReflectionTestRunner
{
    public static int Run(Assembly assembly, string? classFilter, TextWriter output)
    {
        var fixtures = new Dictionary<Type, object>();
        int passed = 0, failed = 0, skipped = 0;
        output.WriteLine($"running {assembly.GetName().Name}{(classFilter is null ? string.Empty : $" (classes containing '{classFilter}')")}");
        try
        {
            var classes = assembly.GetExportedTypes()
                .Where(t => t.IsClass && !t.IsAbstract && (classFilter is null || t.Name.Contains(classFilter, StringComparison.Ordinal)))
                .OrderBy(t => t.FullName, StringComparer.Ordinal);
            foreach (var type in classes)
            {
                foreach (var method in type.GetMethods(BindingFlags.Public | BindingFlags.Instance).OrderBy(m => m.Name, StringComparer.Ordinal))
                {
                    if (method.GetCustomAttribute<FactAttribute>() is not { } fact)
                    {
                        continue;
                    }

                    string name = $"{type.Name}.{method.Name}";
                    if (fact.Skip is { } reason)
                    {
                        skipped++;
                        output.WriteLine($"  skipped {name}: {reason}");
                        continue;
                    }

                    IEnumerable<object?[]> cases;
                    try
                    {
                        cases = fact is TheoryAttribute
                            ? [.. method.GetCustomAttributes<DataAttribute>().SelectMany(d => d.GetData(method))]
                            : [[]];
                    }
                    catch (Exception e)
                    {
                        failed++;
                        output.WriteLine($"  FAILED  {name}: its data could not be read: {e}");
                        continue;
                    }

                    foreach (object?[] data in cases)
                    {
                        string display = data.Length == 0 ? name : $"{name}({string.Join(", ", data)})";
                        var clock = System.Diagnostics.Stopwatch.StartNew();
                        try
                        {
                            RunOne(type, method, data, fixtures);
                            passed++;
                            output.WriteLine($"  passed  {display} ({clock.Elapsed.TotalSeconds:F3} s)");
                        }
                        catch (Exception e)
                        {
                            failed++;
                            var inner = e is TargetInvocationException { InnerException: { } ie } ? ie : e;
                            output.WriteLine($"  FAILED  {display}: {inner}");
                        }
                    }
                }
            }
        }
        finally
        {
            foreach (var fixture in fixtures.Values)
            {
                (fixture as IDisposable)?.Dispose();
            }
        }

        output.WriteLine($"{passed} passed, {failed} failed, {skipped} skipped");
        return failed == 0 && passed > 0 ? 0 : 1;
    }

    private static void RunOne(Type type, MethodInfo method, object?[] data, Dictionary<Type, object> fixtures)
    {
        var ctor = type.GetConstructors().Single();
        object?[] ctorArgs = [.. ctor.GetParameters().Select(p =>
        {
            if (!fixtures.TryGetValue(p.ParameterType, out object? fixture))
            {
                fixture = Activator.CreateInstance(p.ParameterType)!;
                fixtures[p.ParameterType] = fixture;
            }

            return fixture;
        })];
        object instance = ctor.Invoke(ctorArgs);
        try
        {
            var parameters = method.GetParameters();
            if (parameters.Length != data.Length)
            {
                throw new InvalidOperationException($"{data.Length} values for {parameters.Length} parameters");
            }

            object?[] args = [.. data.Select((v, i) => Convert(v, parameters[i].ParameterType))];
            object? result = method.Invoke(instance, args);
            if (result is Task task)
            {
                task.GetAwaiter().GetResult();
            }
        }
        finally
        {
            (instance as IDisposable)?.Dispose();
        }
    }

    /// <summary>InlineData's numbers as the parameter's numeric type (xUnit converts 1 to 1L or 1.0 likewise).</summary>
    private static object? Convert(object? value, Type type)
    {
        Type target = Nullable.GetUnderlyingType(type) ?? type;
        return value is IConvertible && !type.IsInstanceOfType(value) && target.IsPrimitive
            ? System.Convert.ChangeType(value, target, System.Globalization.CultureInfo.InvariantCulture)
            : value;
    }
}
