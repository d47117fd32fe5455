"""The paper's experiments: the UCI data sets (:mod:`.datasets`), the MNAR protocol of
Table 1 (:mod:`.protocol`) and the demo's plots (:mod:`.plots`)."""
