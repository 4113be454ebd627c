"""Every CUDA kernel file of pcdet/ops compiles with plain ``nvcc -c`` (no torch headers), when nvcc is on PATH.

The kernels take raw pointers and a stream; the torch bindings live in the ``*_api.cpp`` files, which need a
CUDA build of torch and are compiled only by setup.py on CUDA machines.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

OPS_DIR = Path(__file__).resolve().parent.parent / 'pcdet' / 'ops'
# '**/src': an op's src folder at any depth (pcdet/ops/knn/src, pcdet/ops/pointnet2/pointnet2_batch/src)
CU_FILES = sorted(OPS_DIR.glob('**/src/*.cu'))
KERNEL_SOURCES = sorted(CU_FILES + list(OPS_DIR.glob('**/src/*.h')) + list(OPS_DIR.glob('**/src/*.cuh')))
NVCC = shutil.which('nvcc')


def _rel(path):
    return str(path.relative_to(OPS_DIR.parent.parent))


def test_kernel_files_exist():
    names = {p.parent.parent.name for p in CU_FILES}
    expected = {'knn', 'roiaware_pool3d', 'pointnet2_batch', 'roipoint_pool3d'}
    assert expected <= names, f'CUDA kernel files found: {[_rel(p) for p in CU_FILES]}'


@pytest.mark.parametrize('path', KERNEL_SOURCES, ids=_rel)
def test_kernel_sources_include_no_torch_headers(path):
    includes = re.findall(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', path.read_text(), flags=re.M)
    bad = [inc for inc in includes if inc.startswith(('torch/', 'ATen/', 'c10/', 'pybind11/'))]
    assert not bad, f'{_rel(path)} includes torch headers {bad}; keep them in the *_api.cpp binding'


@pytest.mark.skipif(NVCC is None, reason='nvcc not on PATH: CUDA kernels not compiled')
@pytest.mark.parametrize('path', CU_FILES, ids=_rel)
def test_nvcc_compiles(path, tmp_path):
    obj = tmp_path / (path.stem + '.o')
    cmd = [NVCC, '-c', '-O2', '-std=c++17', str(path), '-o', str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, f'{" ".join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}'
    assert obj.stat().st_size > 0
