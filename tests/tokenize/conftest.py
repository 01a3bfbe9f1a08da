from tests.training_env import one_thread, workdir  # noqa: F401  (autouse; the shared store)
