"""Persona files (loading, validation) and the duo's saved state."""

from spark_client.personas.files import PersonaFileError, load_persona, load_personas, shipped_personas
from spark_client.personas.model import Persona, TurnPolicy
from spark_client.personas.state import DuoState, StateFile

__all__ = [
    "DuoState",
    "Persona",
    "PersonaFileError",
    "StateFile",
    "TurnPolicy",
    "load_persona",
    "load_personas",
    "shipped_personas",
]
