# lit configuration: RUN lines use flashjit-opt, flashjit, FileCheck, not.
import os
import lit.formats

config.name = "flashjit"
config.test_format = lit.formats.ShTest(execute_external=True)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.flashjit_bin_dir, "..", "tests", "lit-out")
config.excludes = ["lit.cfg.py", "lit.site.cfg.py.in"]
config.environment["PATH"] = os.pathsep.join(
    [config.flashjit_bin_dir, config.llvm_tools_dir, config.environment.get("PATH", os.environ.get("PATH", ""))])
# Keep compile tests independent of any user's cache.
config.environment["FLASHJIT_CACHE_DIR"] = os.path.join(config.test_exec_root, "cache")
