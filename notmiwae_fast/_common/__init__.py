"""Support shared by the layers above the operators: atomic file writes and safe loads
(:mod:`.io`), argument validation with messages naming the argument (:mod:`.validate`),
progress bars (:mod:`.progress`), image files (:mod:`.image_io`), torch's thread count
for a block (:mod:`.threads`), its random state for a block (:mod:`.seeding`), captured
CUDA graphs (:mod:`.capture`). Nothing here knows
the models."""
