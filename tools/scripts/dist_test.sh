#!/usr/bin/env bash
# Multi-process evaluation on one machine: bash tools/scripts/dist_test.sh NPROC --cfg_file ... --ckpt ... [test.py args]
# --batch_size is the TOTAL batch size and must divide by NPROC. Env: PYTHON, PORT (see _torchrun.sh).
exec bash "$(dirname "${BASH_SOURCE[0]}")/_torchrun.sh" test.py "$@"
