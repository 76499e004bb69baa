class CUDARuntimeError(RuntimeError):
    def __init__(self, status=0):
        self.status = status
        super().__init__(f"cudaErrorFake: status {status}")


def getDeviceCount():
    return 1


def getDevice():
    return 0


def memGetInfo():
    return (70 << 30, 80 << 30)


def deviceSynchronize():
    pass


def runtimeGetVersion():
    return 12080


def driverGetVersion():
    return 12080


def getDeviceProperties(device):
    return {"name": b"Fake GPU (NumPy)", "totalGlobalMem": 80 << 30}
