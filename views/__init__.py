"""Tables and pictures made from rows: the study report, plots and images."""
