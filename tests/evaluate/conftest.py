from tests.engines.conftest import box, tiny_model  # noqa: F401  (the sandbox and model fixtures)
