import subprocess
import sys

import companion


def test_import_companion_does_not_import_torch():
    code = "import sys, companion, companion.data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_modules_are_listed():
    for name in companion.__all__:
        assert hasattr(companion, name)
