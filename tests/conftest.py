import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # so tests can `import tiny`

pytest_plugins = ["s3server"]  # the moto S3 server fixtures (tests/s3server.py)

pytest.register_assert_rewrite("parity")  # the parity harness's asserts explain their failures
