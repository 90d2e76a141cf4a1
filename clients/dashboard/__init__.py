"""`dynamicrl dashboard`: a client that serves the run to browsers (docs/dashboard.md).

- app: the FastAPI application (REST API, event stream, page);
- auth: the token, the cross-site check, failed-login limits;
- events: the bus, numbered and buffered for any number of event-stream readers;
- runfiles: what is read from the run directory (metrics, checkpoints, clips, previews);
- static/: the page (plain JavaScript; plotly.js comes from the plotly package).
"""
