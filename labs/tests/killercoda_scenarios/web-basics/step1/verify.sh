#!/bin/bash
curl -sf http://localhost:8080/ > /dev/null
