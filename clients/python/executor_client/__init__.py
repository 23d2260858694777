"""Client for the Secure Script Executor.

    from executor_client import Client, errors

    client = Client("http://localhost:8080", api_key="...")
    run = client.execute("def main(x):\n    return x * 2", input=21)
    run.result, run.stdout, run.usage.wall_ms
"""

from . import errors
from .client import NO_INPUT, BatchItem, BatchResult, Client, ExecuteResult, Usage

__all__ = ["Client", "ExecuteResult", "BatchResult", "BatchItem", "Usage", "NO_INPUT", "errors"]
__version__ = "1.0.0"
