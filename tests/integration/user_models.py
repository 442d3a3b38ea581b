"""Model code a user would bring, written into a test's folder and named by ``model.arch: module:build``."""

# A forward that hard-codes a width: removing channels of conv2 breaks it (one group to protect).
HARDVIEW = """
import torch.nn as nn
import torch.nn.functional as F


class HardView(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 32 * 32, num_classes)

    def forward(self, x):
        x = self.conv2(F.relu(self.bn1(self.conv1(x))))
        return self.fc(x.view(x.size(0), 8 * 32 * 32))  # hard-coded width: breaks once conv2 loses filters


def build(num_classes=10):
    return HardView(num_classes)
"""
