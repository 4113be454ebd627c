"""RoI target assignment (``ProposalTargetLayer``)."""
