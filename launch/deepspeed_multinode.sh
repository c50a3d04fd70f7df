#!/usr/bin/env bash
# Multi-node DeepSpeed ZeRO-2 jobs with the `deepspeed` launcher.
#
#   # From the first node: pdsh over passwordless ssh starts every node of the hostfile.
#   cp launch/hostfile.example launch/hostfile   # then list your nodes in it
#   bash launch/deepspeed_multinode.sh recipes/pretrain.py --config recipes/configs/qwen2/pretrain_qwen2.5_0.5b.yaml
#
#   # Without ssh between nodes (containers, k8s): start it on every node with its own NODE_RANK.
#   NODE_RANK=0 MASTER_ADDR=node-a bash launch/deepspeed_multinode.sh recipes/pretrain.py --config ...
#
# HOSTFILE (launch/hostfile)        the nodes, "<host> slots=<GPUs>" per line; first = master
# GPUS_PER_NODE (8)                 processes per node
# MASTER_ADDR (first hostfile host) rendezvous address; MASTER_PORT (29500)
# NODE_RANK (unset: pdsh mode)      this node's index in the hostfile, for the no-ssh mode
# DS_CONFIG (ds_configs/zero2.json) ZeRO config; "auto" values are filled by the HF Trainer
# DRY_RUN=1                         print the command instead of running it
# NCCL settings: launch/nccl_env.sh. On a CPU-only machine this runs over gloo (tests do that).
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/nccl_env.sh

HOSTFILE=${HOSTFILE:-launch/hostfile}
if [ ! -f "$HOSTFILE" ]; then
    echo "deepspeed_multinode.sh: hostfile '$HOSTFILE' not found; copy launch/hostfile.example and list your nodes" >&2
    exit 2
fi
MASTER_ADDR=${MASTER_ADDR:-$(awk '$1 !~ /^#/ && NF {print $1; exit}' "$HOSTFILE")}

cmd=(deepspeed --hostfile "$HOSTFILE" --num_gpus "${GPUS_PER_NODE:-8}"
     --master_addr "$MASTER_ADDR" --master_port "${MASTER_PORT:-29500}")
if [ -n "${NODE_RANK:-}" ]; then
    cmd+=(--no_ssh --node_rank "$NODE_RANK")
fi
cmd+=("$@" --deepspeed "${DS_CONFIG:-ds_configs/zero2.json}")

if [ -n "${DRY_RUN:-}" ]; then
    echo "${cmd[*]}"
else
    exec "${cmd[@]}"
fi
