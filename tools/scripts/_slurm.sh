#!/usr/bin/env bash
# Shared by slurm_train.sh / slurm_test_mgpu.sh: bash _slurm.sh {train.py|test.py} PARTITION JOB_NAME NGPUS [args]
# Env: GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS (extra srun flags), PORT, PYTHON.
set -euo pipefail
SCRIPT=$1
shift
PARTITION=$1
JOB_NAME=$2
GPUS=$3
shift 3
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# a port in [10000, 59151] that is free on this node (the master is the first node of the allocation)
PORT=${PORT:-$($PYTHON -c 'import random, socket
for _ in range(100):
    p = random.randint(10000, 59151); s = socket.socket()
    try:
        s.bind(("", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()')}
# shellcheck disable=SC2086
srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 $SRUN_ARGS \
    $PYTHON -u "$TOOLS_DIR/$SCRIPT" --launcher slurm --tcp_port "$PORT" "$@"
