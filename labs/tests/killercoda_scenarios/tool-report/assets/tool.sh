#!/bin/sh
echo "hello from the tool"
