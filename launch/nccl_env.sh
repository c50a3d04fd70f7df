# NCCL / torch.distributed settings for multi-node GPU jobs, sourced by deepspeed_multinode.sh and
# slurm_multinode.sbatch. Each is a default: a value you export before launching wins.
# What they do and when to change them: docs/distributed.md#nccl-settings.

# WARN: errors only. On a first run use INFO: it prints the transport chosen for each peer, and
# "NET/Socket" between nodes that have InfiniBand means IB is not being used.
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# A failed or hung rank tears the whole job down instead of leaving the others blocked in a
# collective until ddp_timeout (30 min). torchrun sets this already; the deepspeed launcher does not.
export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}
# CPU threads per rank (data loading, tokenizers); launchers otherwise force 1.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

# Cluster-specific, left to NCCL's own detection unless you export them:
#   NCCL_SOCKET_IFNAME=eth0      interface for bootstrap / socket traffic (NCCL may pick docker0 or a
#                                management NIC that the other node cannot reach: symptom, a hang at start)
#   NCCL_IB_HCA=mlx5_0,mlx5_1    InfiniBand / RoCE adapters to use
#   NCCL_IB_DISABLE=1            Ethernet-only clusters where probing IB stalls
#   NCCL_P2P_DISABLE=1           consumer GPUs without peer-to-peer (some RTX 4090 boxes hang without it)
