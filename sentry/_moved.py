"""Module paths from before sentry/ was split into subpackages (docs/ARCHITECTURE.md).

`import sentry.signing`, `from sentry.dataset import build_manifest`, `sentry.fileio` and
`python3 -m sentry.bench` keep working: each old name is the moved module itself (one object,
so patching it patches the code that uses it), found by a finder on sys.meta_path."""
import importlib
import importlib.abc
import importlib.util
import sys

# old name under sentry -> where the module lives now (under sentry)
MOVED = {
    "fileio": "io.fileio", "file_reader": "io.file_reader", "gds": "io.gds",
    "safetensors_format": "formats.safetensors_format", "model_files": "formats.model_files",
    "bundle": "formats.bundle", "bundle_v02": "formats.bundle_v02",
    "crypto": "signatures.keys", "ecdsa": "signatures.ecdsa", "keyless": "signatures.keyless",
    "signing": "oms.signing", "loader": "oms.loader", "expected": "oms.trusted_digests",
    "dataset": "datasets.manifest", "data": "datasets.stores", "resident": "datasets.resident",
    "guard": "runtime.guard", "checkpoint": "runtime.checkpoint",
    "collectives": "parallel.collectives", "layout": "parallel.layout",
    "syncplan": "parallel.syncplan", "weightsync": "parallel.weightsync",
    "distributed": "parallel.distributed",
    "agents": "pipeline.agents", "provenance": "pipeline.provenance", "demo": "pipeline.demo",
    "models": "pipeline.shaped_models",
    "cli": "tools.cli", "bench": "tools.bench", "progress": "tools.progress",
}


def new_name(old):
    """'sentry.signing' -> 'sentry.oms.signing'; None for a name that did not move."""
    package, _, name = old.partition(".")
    return f"sentry.{MOVED[name]}" if package == "sentry" and name in MOVED else None


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        target_name = new_name(fullname)
        if target_name is None:
            return None
        return importlib.util.spec_from_loader(fullname, self,
                                               origin=importlib.util.find_spec(target_name).origin)

    def create_module(self, spec):
        return importlib.import_module(new_name(spec.name))

    def exec_module(self, module):
        pass  # the moved module was executed when it was imported under its own name

    def get_code(self, fullname):
        # `python3 -m sentry.<old name>` (runpy): run the moved module as __main__.
        source = (f"import runpy\nrunpy.run_module({new_name(fullname)!r}, run_name='__main__', "
                  "alter_sys=True)\n")
        return compile(source, f"<{fullname}>", "exec")


def install():
    if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
        # First: a finder further on (an editable install's) could find a stale file by the old name.
        sys.meta_path.insert(0, _OldPaths())
