#!/usr/bin/env bash
# Wheels the H200 image lacks, for Python 3.12, into .whl/ (carried with `carry: [".whl", ...]`; the
# session script's `setup` step installs them). Run from the project root on this machine.
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "pydantic==$(python3 -c 'import pydantic; print(pydantic.VERSION)')" \
  "pydantic_core==$(python3 -c 'import pydantic_core; print(pydantic_core.__version__)')" \
  annotated_types typing_inspection polygraphy adjustText
ls .whl
