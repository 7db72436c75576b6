import time, numpy as np, torch, convt
dev = convt.Device("cuda")
for name, cin, cout, hw, k, s, p in [("dcgan_g2", 512, 256, (8, 8), 4, 2, 1), ("unet_up1", 256, 128, (64, 64), 2, 2, 0), ("vae_dec", 128, 64, (32, 32), 3, 2, 1)]:
    layer = convt.ConvTranspose2d(cin, cout, k, stride=s, padding=p, device=dev, seed=0)
    x = torch.randn((8, cin, *hw), device="cuda")
    gy = torch.randn(tuple(layer(x).shape), device="cuda")
    for mask in [(True, False, False), (False, True, False), (False, False, True), (True, True, True)]:
        layer.backward(x, gy, mask); torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            layer.backward(x, gy, mask)
        torch.cuda.synchronize()
        print(name, mask, f"{(time.perf_counter() - t) / 5 * 1e3:.2f} ms", flush=True)
