"""Training objectives: one module per objective (`base.Objective` is the interface);
`registry` names them and derives a run's objective from its config."""
