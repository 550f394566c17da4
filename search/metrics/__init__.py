"""Quality metrics of samples: torch-fidelity FID/KID/PR, reference distance, class accuracy, exact GMM laws."""
