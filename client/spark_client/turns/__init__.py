"""The turn loop: selection of what to answer, persona, memory, prompt."""
