from django.urls import re_path

websocket_urlpatterns: list = []
