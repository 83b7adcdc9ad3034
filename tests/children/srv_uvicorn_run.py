"""``python main.py`` as FastAPI's docs show it: uvicorn.run on $PORT, binding its own address."""

import os

import uvicorn
from srv_asgi import app

if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=int(os.environ.get("PORT", "8000")))
