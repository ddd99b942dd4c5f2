using MoECluster.Cluster.Dispatch;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Layers;
using MoECluster.Testing;
using MoECluster.Wire;

namespace MoECluster.Cluster.Grains.Tests;

/// <summary>
/// The dispatcher contract on the cluster's dispatcher: the front-end's <see cref="OrleansExpertDispatcher"/> (fp32
/// wire) sending the rows to the expert-shard grains of an in-process cluster (16 experts in 4 shards on 2 expert silos).
/// </summary>
public sealed class OrleansExpertDispatcherContractTests(InProcessMoeCluster cluster) : ExpertDispatcherContract, IClassFixture<InProcessMoeCluster>
{
    protected override MoeModel Model => cluster.Reference(InProcessMoeCluster.Latent);

    protected override IExpertDispatcher Dispatcher() =>
        cluster.Service<ShardCalls>(cluster.Frontend).Dispatcher(InProcessMoeCluster.Latent, WireDType.F32);
}
