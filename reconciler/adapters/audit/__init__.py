"""The tamper-evident audit log: a hash chain (`chain`), its writer (`writer`) and signed
checkpoints (`checkpoint`). See `chain` for what the chain proves and what it cannot."""
