"""VTube Studio plugin API: sans-I/O protocol (`protocol`, `bookkeeping`) and asyncio client."""

from .bookkeeping import Backoff, BackoffPolicy, ConnectionLost, PendingRequests, RequestTimeout
from .client import VTubeStudioClient
from .protocol import ErrorID, Hotkey, ParameterValue, VTSAPIError
from .state import MouthMapping, VTSState, VTSStatus
from .token_store import TokenStore, default_token_path

__all__ = [
    "Backoff",
    "BackoffPolicy",
    "ConnectionLost",
    "ErrorID",
    "Hotkey",
    "MouthMapping",
    "ParameterValue",
    "PendingRequests",
    "RequestTimeout",
    "TokenStore",
    "VTSAPIError",
    "VTSState",
    "VTSStatus",
    "VTubeStudioClient",
    "default_token_path",
]
