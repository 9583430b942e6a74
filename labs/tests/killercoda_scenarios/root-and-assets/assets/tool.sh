#!/bin/sh
echo "tool says hello"
