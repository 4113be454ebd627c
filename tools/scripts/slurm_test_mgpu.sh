#!/usr/bin/env bash
# SLURM multi-GPU evaluation: bash tools/scripts/slurm_test_mgpu.sh PARTITION JOB_NAME NGPUS --cfg_file ... --ckpt ...
# Env: GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS (extra srun flags), PORT, PYTHON (see _slurm.sh).
exec bash "$(dirname "${BASH_SOURCE[0]}")/_slurm.sh" test.py "$@"
