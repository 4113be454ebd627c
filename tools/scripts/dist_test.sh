#!/usr/bin/env bash
# Multi-process evaluation on one machine: bash tools/scripts/dist_test.sh NPROC --cfg_file ... --ckpt ... [test.py args]
# torchrun on a free port chosen by the OS; NCCL on GPUs, Gloo on CPU (add --device cpu to force CPU).
# --batch_size is the TOTAL batch size and must divide by NPROC. Env: PYTHON (interpreter), PORT (fixed port).
set -euo pipefail
NGPUS=$1
shift
PYTHON=${PYTHON:-python}
TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${PORT:-$($PYTHON -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')}
exec $PYTHON -m torch.distributed.run --nnodes=1 --nproc_per_node="$NGPUS" --max_restarts=0 \
    --master_addr=127.0.0.1 --master_port="$PORT" "$TOOLS_DIR/test.py" --launcher pytorch "$@"
