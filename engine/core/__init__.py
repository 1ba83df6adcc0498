"""The engine's Qt-free core, below every engine: errors, jobs and their events, projects and atomic
writes, safe reading of files from strangers, cameras, image metrics, devices, and the process-wide
policies set before torch loads.  Nothing here knows about scenes, portraits or editors."""
