#!/bin/sh
# The documentation site: docs/ pages and the API reference from the docstrings (mkdocs with
# mkdocstrings; config in mkdocs.yml), built with every warning an error. About 5 s.
#   .ci/docs.sh              build into site/ (open site/index.html)
#   .ci/docs.sh serve        a live preview on http://127.0.0.1:8000
# Needs the [docs] extra: .venv/bin/pip install -e '.[docs]'
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export NO_MKDOCS_2_WARNING=1
if [ "${1:-build}" = serve ]; then
    exec "$PY" -m mkdocs serve
fi
exec "$PY" -m mkdocs build --strict --site-dir "${SITE_DIR:-site}"
