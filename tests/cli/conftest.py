from tests.client.conftest import module_procs, node, persistence, stream, tiny_node  # noqa: F401
