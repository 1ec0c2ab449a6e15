"""EPCIS test material: the GS1 files fetched at test time (artefacts) and golden documents."""
