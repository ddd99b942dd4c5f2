using MoECluster.Kernels.Bench;

return GemmBenchmark.Run(args);
