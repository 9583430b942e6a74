#!/bin/bash
cd /root
