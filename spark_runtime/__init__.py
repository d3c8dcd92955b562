"""Code shared by the Triton models and the engine builder: engines, request parsing, serving.

Nothing here imports the client; the client reaches these engines only through Triton.
"""
