"""Run by tests/test_serving.py in a fresh interpreter: answer each request shape through the pyfunc, printing
the distributions that animerec's own modules imported (JSON) and whether TensorFlow or Keras was loaded."""

import builtins
import json
import sys
from importlib.metadata import packages_distributions

imported = set()
_import = builtins.__import__


def _recording(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__", "")
    if level == 0 and importer.startswith("animerec"):
        imported.add(name.split(".")[0])
    return _import(name, globals, locals, fromlist, level)


builtins.__import__ = _recording
import pandas as pd  # noqa: E402

from animerec.pyfunc import AnimeRecPyfunc  # noqa: E402


class _Context:
    artifacts = {"bundle": sys.argv[1]}


model = AnimeRecPyfunc()
model.load_context(_Context())
for request in json.loads(sys.argv[2]):
    model.predict(None, pd.DataFrame([request]))
builtins.__import__ = _import
outside = imported - set(sys.stdlib_module_names) - {"animerec"}
names = packages_distributions()
print(json.dumps({"distributions": sorted({d for m in outside for d in names.get(m, [m])}),
                  "tensorflow": any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules)}))
