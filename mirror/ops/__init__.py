"""Operations behind each CLI command: arguments in, plain values out (no printing)."""
