"""containers/image "simple signing": payloads, GnuPG, and the policy.json that ``copy`` and ``sync`` enforce."""
