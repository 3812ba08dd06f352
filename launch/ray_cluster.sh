#!/usr/bin/env bash
# Start Ray on a node: `head` on the first node, `worker HEAD_IP:PORT` on the others.
# Then run a recipe against it from the head: tokencredit train RECIPE cluster.address=auto
#   bash launch/ray_cluster.sh head [PORT] [BIND_IP]   # BIND_IP defaults to 127.0.0.1 (this machine only);
#                                                      # give the node's cluster-network IP to let others join
#                                                      # (Ray then listens on all of the node's interfaces:
#                                                      # keep the cluster network firewalled)
#   bash launch/ray_cluster.sh worker 10.0.0.1:6379
# The dashboard always binds to 127.0.0.1 (reach it through an SSH tunnel).
# GPU clusters: let Ray see every GPU of the node and pin actors through num_gpus_per_* keys.
set -euo pipefail
# shellcheck disable=SC1091
. "${TOKENCREDIT_VENV:-$(dirname "$0")/../.venv}/bin/activate"
export RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES=${RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES:-0}
case "${1:-}" in
  head)   bind=${3:-127.0.0.1}
          # Ray turns 127.0.0.1 into the machine's network address (and listens on every interface)
          # unless it is told this is a one-machine instance (rollout/local_ray.py)
          if [ "$bind" = 127.0.0.1 ]; then export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; fi
          exec ray start --head --port="${2:-6379}" --node-ip-address="$bind" \
            --dashboard-host=127.0.0.1 --disable-usage-stats --block ;;
  worker) exec ray start --address="${2:?HEAD_IP:PORT}" --disable-usage-stats --block ;;
  *) echo "usage: $0 head [PORT] | worker HEAD_IP:PORT" >&2; exit 2 ;;
esac
