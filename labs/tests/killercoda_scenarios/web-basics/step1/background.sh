#!/bin/bash
mkdir -p /root/site
