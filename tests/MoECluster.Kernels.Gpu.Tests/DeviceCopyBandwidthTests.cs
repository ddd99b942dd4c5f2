namespace MoECluster.Kernels.Gpu.Tests;

/// <summary>The device copy probe behind bench's GPU summary, for sanity on the ILGPU CPU accelerator (no GPU here).</summary>
[Collection(CpuAcceleratorGroup.Name)]
public sealed class DeviceCopyBandwidthTests(CpuAcceleratorFixture fixture)
{
    [Fact]
    public void A_small_device_copy_gives_a_positive_finite_bandwidth_counting_read_and_write()
    {
        var r = DeviceCopyBandwidth.Measure(fixture.Device.Accelerator, bytes: 4L << 20, runs: 2);
        Assert.Equal(4L << 20, r.BufferBytes);
        Assert.Equal(2, r.Runs);
        Assert.True(double.IsFinite(r.BytesPerSecond) && r.BytesPerSecond > 1e7 && r.BytesPerSecond < 1e14, $"{r.BytesPerSecond:E3} B/s");
        Assert.Throws<ArgumentOutOfRangeException>(() => DeviceCopyBandwidth.Measure(fixture.Device.Accelerator, bytes: 2));
    }
}
