"""fastapi_taskflow: managed background tasks for FastAPI."""
