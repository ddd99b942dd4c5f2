using MoECluster.Kernels.Gpu.Runner;
using MoECluster.Kernels.Gpu.Tests;

// Runs every test of MoECluster.Kernels.Gpu.Tests in this process and ends with "N passed, N failed, N skipped";
// exit 1 when any failed or none ran. An argument narrows the run to the test classes whose name contains it.
return ReflectionTestRunner.Run(typeof(GpuAcceleratorsTests).Assembly, args.Length > 0 ? args[0] : null, Console.Out);
