"""Avatar: lip sync, expressions, VTube Studio."""
