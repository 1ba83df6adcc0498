"""Qt-free parts of the app: the open project, job lanes and the host protocol workspaces use; tested without a display."""
