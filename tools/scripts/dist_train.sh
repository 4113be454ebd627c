#!/usr/bin/env bash
# Multi-process training on one machine: bash tools/scripts/dist_train.sh NPROC --cfg_file ... [train.py args]
# --batch_size is the TOTAL batch size and must divide by NPROC. Env: PYTHON, PORT (see _torchrun.sh).
exec bash "$(dirname "${BASH_SOURCE[0]}")/_torchrun.sh" train.py "$@"
