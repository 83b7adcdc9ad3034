"""A one-file Django project under uvicorn: slow (SRV_SLEEP) or broken (SRV_BOOM) at import."""

import os
import time

from django.conf import settings

time.sleep(float(os.environ.get("SRV_SLEEP", "0")))
if os.environ.get("SRV_BOOM"):
    raise RuntimeError("boom at import")

settings.configure(DEBUG=False, SECRET_KEY="matrix", ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"],
                   MIDDLEWARE=[], INSTALLED_APPS=[])

from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def hello(request):  # type: ignore[no-untyped-def]
    return HttpResponse("hello from the app", content_type="text/plain")


def healthz(request):  # type: ignore[no-untyped-def]
    return JsonResponse({"status": "ok"})


urlpatterns = [path("", hello), path("healthz", healthz)]
application = get_asgi_application()
