"""Reports: paper-style figures (`figures`), the demo report and the table reproductions."""
